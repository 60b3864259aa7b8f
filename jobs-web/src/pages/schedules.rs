//! The scheduler: which worker leads it, the schedules it fires (their last
//! and next runs), the workers given other schedule definitions, and Run now.
//!
//! All of it from the workers' latest beats, folded by [`leadership`] (a
//! pure function): the leader is the live worker whose latest beat says it
//! leads, the newest beat of several that say so (two say so only for the
//! moment a handover takes); stopped and vanished workers count for
//! nothing. Only the leader's beat lists the schedules.
//!
//! Run now is confirmed like a bulk action: `GET /schedules/<name>/run`
//! asks, its form POSTs with the CSRF token, and the POST calls the leader
//! (`jobs_core::plumbing::run_schedule`, [`RUN_TIMEOUT`]), which enqueues the
//! schedule's job once under a fresh id. Answered, the browser is sent to a
//! page that says which id (a reload of it runs nothing); unanswered or
//! refused, the POST's page says why.

use std::sync::Arc;
use std::time::Duration;

use askama::Template;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use jobs_core::plumbing::events::ScheduleBeat;
use serde::Serialize;

use super::{may_act, page, read_only, render, CsrfForm, PageCtx};
use crate::dashboard::{now_ms, Dashboard};
use crate::extract::Base;
use crate::format::{encode, span, time};
use crate::history::{WorkerRow, WorkerStatus};
use crate::refusal::Refusal;
use crate::security::Csrf;

/// How long Run now waits for the leader's answer.
pub(crate) const RUN_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest schedule name a path may carry.
const MAX_NAME: usize = 200;

/// What the workers' latest beats say of the scheduler.
#[derive(Debug, Default)]
pub(crate) struct Leadership<'a> {
    /// The live worker whose latest beat says it leads (the newest of several).
    pub(crate) leader: Option<&'a WorkerRow>,
    /// Other live workers whose latest beats say they lead too.
    pub(crate) also_leading: Vec<&'a str>,
    /// Live workers with schedule definitions other than the leader's (none without a leader).
    pub(crate) differing: Vec<&'a str>,
    /// Live workers with schedules, the leader among them.
    pub(crate) with_schedules: usize,
}

impl<'a> Leadership<'a> {
    /// The schedules of the leader's latest beat (none without a leader).
    pub(crate) fn schedules(&self) -> &'a [ScheduleBeat] {
        self.leader.and_then(|w| w.scheduler.as_ref()).map_or(&[], |s| s.schedules.as_slice())
    }

    /// Why no worker leads, in words (for when none does).
    pub(crate) fn why_none(&self) -> String {
        match self.with_schedules {
            0 => "No worker leads the scheduler: no worker with schedules is running.".to_owned(),
            n => format!(
                "No worker leads the scheduler: {n} live worker{s} with schedules, and no latest beat says it leads \
                 (a new leader is taking over?).",
                s = if n == 1 { "" } else { "s" }
            ),
        }
    }
}

/// Folds the workers' latest beats (`rows`, as `History::workers` gives
/// them) into who leads the scheduler.
pub(crate) fn leadership(rows: &[WorkerRow]) -> Leadership<'_> {
    let scheduling: Vec<&WorkerRow> =
        rows.iter().filter(|w| w.status == WorkerStatus::Live && w.scheduler.is_some()).collect();
    let leads = |w: &WorkerRow| w.scheduler.as_ref().is_some_and(|s| s.leading);
    let leader = scheduling
        .iter()
        .copied()
        .filter(|w| leads(w))
        .max_by(|a, b| (a.last_beat_ms, a.started_at_ms, &a.id).cmp(&(b.last_beat_ms, b.started_at_ms, &b.id)));
    let Some(leader) = leader else {
        return Leadership { with_schedules: scheduling.len(), ..Leadership::default() };
    };
    let digest = leader.scheduler.as_ref().map(|s| s.digest.as_str());
    let others = || scheduling.iter().copied().filter(|w| w.id != leader.id);
    Leadership {
        leader: Some(leader),
        also_leading: others().filter(|w| leads(w)).map(|w| w.id.as_str()).collect(),
        differing: others()
            .filter(|w| w.scheduler.as_ref().map(|s| s.digest.as_str()) != digest)
            .map(|w| w.id.as_str())
            .collect(),
        with_schedules: scheduling.len(),
    }
}

/// Marks the scheduler's leader among `rows`.
pub(crate) fn mark_leader(rows: &mut [WorkerRow]) {
    let leader = leadership(rows).leader.map(|w| w.id.clone());
    for row in rows.iter_mut() {
        row.scheduler_leader = leader.as_deref() == Some(row.id.as_str());
    }
}

/// The workers as of `now`, live first, the scheduler's leader marked.
pub(crate) fn workers(dashboard: &Dashboard, now: u64) -> Vec<WorkerRow> {
    let mut rows = dashboard.history().workers(now);
    mark_leader(&mut rows);
    rows
}

/// A schedule, as `/api/schedules` gives it.
#[derive(Debug, Serialize)]
pub(crate) struct ScheduleRow<'a> {
    name: &'a str,
    cron: &'a str,
    time_zone: &'a str,
    job_type: &'a str,
    catch_up: &'a str,
    enabled: bool,
    last_fired_ms: Option<u64>,
    last_lateness_ms: Option<u64>,
    next_ms: &'a [u64],
}

impl<'a> ScheduleRow<'a> {
    pub(crate) fn of(s: &'a ScheduleBeat) -> Self {
        ScheduleRow {
            name: &s.name,
            cron: &s.cron,
            time_zone: &s.time_zone,
            job_type: &s.job_type,
            catch_up: &s.catch_up,
            enabled: s.enabled,
            last_fired_ms: s.last_fired_ms,
            last_lateness_ms: s.last_lateness_ms,
            next_ms: &s.next_ms,
        }
    }
}

/// A schedule, as shown.
struct ScheduleView {
    name: String,
    cron: String,
    time_zone: String,
    job_type: String,
    catch_up: String,
    enabled: &'static str,
    last_run: String,
    lateness: String,
    next: Vec<String>,
}

impl ScheduleView {
    fn of(s: &ScheduleBeat, now: u64) -> Self {
        ScheduleView {
            name: s.name.clone(),
            cron: s.cron.clone(),
            time_zone: s.time_zone.clone(),
            job_type: s.job_type.clone(),
            catch_up: s.catch_up.clone(),
            enabled: if s.enabled { "yes" } else { "no (never fires)" },
            last_run: s.last_fired_ms.map_or_else(
                || "not yet".to_owned(),
                |at| format!("{} ({} ago)", time(at), span(now.saturating_sub(at))),
            ),
            lateness: s.last_lateness_ms.map_or_else(|| "-".to_owned(), |ms| format!("{ms} ms")),
            next: s
                .next_ms
                .iter()
                .take(3)
                .map(|&at| match at.checked_sub(now) {
                    Some(wait) if wait >= 1000 => format!("{} (in {})", time(at), span(wait)),
                    _ => time(at),
                })
                .collect(),
        }
    }
}

/// The leader, as shown.
struct LeaderView {
    id: String,
    host: String,
    pid: u32,
    last_beat: String,
    digest: String,
}

#[derive(Template)]
#[template(path = "schedules.html")]
pub(crate) struct Schedules {
    page: PageCtx,
    leader: Option<LeaderView>,
    /// Other workers that say they lead, joined.
    also_leading: String,
    /// Workers with other definitions, joined.
    differing: String,
    schedules: Vec<ScheduleView>,
    /// Why no worker leads, when none does.
    why_none: String,
}

/// The schedules page as of `now`.
pub(crate) fn schedules_page(dashboard: &Dashboard, base: Base, csrf: &Csrf, now: u64) -> Schedules {
    let rows = dashboard.history().workers(now);
    let state = leadership(&rows);
    Schedules {
        page: page(dashboard, base, "schedules", csrf),
        leader: state.leader.map(|w| LeaderView {
            id: w.id.clone(),
            host: w.host.clone(),
            pid: w.pid,
            last_beat: span(now.saturating_sub(w.last_beat_ms)),
            digest: w.scheduler.as_ref().map(|s| s.digest.clone()).unwrap_or_default(),
        }),
        also_leading: state.also_leading.join(", "),
        differing: state.differing.join(", "),
        schedules: state.schedules().iter().map(|s| ScheduleView::of(s, now)).collect(),
        why_none: state.why_none(),
    }
}

pub(crate) async fn schedules(
    State(dashboard): State<Arc<Dashboard>>,
    base: Base,
    Extension(csrf): Extension<Csrf>,
) -> Response {
    render(&schedules_page(&dashboard, base, &csrf, now_ms()))
}

/// A schedule name from a path, checked: one the leader could know.
pub(crate) fn schedule_name(name: &str) -> Result<(), Refusal> {
    if name.trim().is_empty() || name.len() > MAX_NAME || name.chars().any(char::is_control) {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            format!(
                "not a schedule name: names are not blank, hold no control characters and are at most {MAX_NAME} bytes"
            ),
        ));
    }
    Ok(())
}

#[derive(Template)]
#[template(path = "run_confirm.html")]
struct RunConfirm {
    page: PageCtx,
    name: String,
    leader: String,
    /// The schedule, when the leader's latest beat lists it.
    schedule: Option<ScheduleView>,
    /// Why it is not known here, when not.
    unknown: String,
}

/// The confirmation of a Run now: what it does, and its form (this GET runs nothing).
pub(crate) async fn run_confirm(
    State(dashboard): State<Arc<Dashboard>>,
    base: Base,
    Extension(csrf): Extension<Csrf>,
    Path(name): Path<String>,
) -> Result<Response, Refusal> {
    schedule_name(&name)?;
    if dashboard.web.read_only {
        return Err(read_only());
    }
    let now = now_ms();
    let rows = dashboard.history().workers(now);
    let state = leadership(&rows);
    let schedule = state.schedules().iter().find(|s| s.name == name).map(|s| ScheduleView::of(s, now));
    let unknown = match state.leader {
        None => format!("{} Run now asks the leader, should one take over within {}s.", state.why_none(), RUN_TIMEOUT.as_secs()),
        Some(w) => format!(
            "The latest beat of the scheduler's leader, {}, lists no schedule named {name}: the leader says so if it has none.",
            w.id
        ),
    };
    Ok(render(&RunConfirm {
        page: page(&dashboard, base, "schedules", &csrf),
        leader: state.leader.map(|w| w.id.clone()).unwrap_or_default(),
        schedule,
        unknown,
        name,
    }))
}

/// A confirmed Run now: asks the leader to enqueue the schedule's job once,
/// and sends the browser to the page that says which job.
pub(crate) async fn run_do(
    State(dashboard): State<Arc<Dashboard>>,
    base: Base,
    headers: HeaderMap,
    Path(name): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Result<Response, Refusal> {
    schedule_name(&name)?;
    may_act(&dashboard, &headers, &form.csrf)?;
    let job = jobs_core::plumbing::run_schedule(&dashboard.client, &name, RUN_TIMEOUT)
        .await
        .map_err(|e| run_refusal(&name, &e))?;
    tracing::info!(schedule = %name, job.id = %job, "run now: enqueued");
    let id = dashboard.runs.add(&name, job.as_str(), now_ms());
    Ok(Redirect::to(&format!("{}/schedules/{}/runs/{id}", base.0, encode(&name))).into_response())
}

/// Why a Run now of `name` did not run, in words.
fn run_refusal(name: &str, err: &jobs_core::Error) -> Refusal {
    match err {
        jobs_core::Error::CallTimeout { after, .. } => Refusal::new(
            StatusCode::GATEWAY_TIMEOUT,
            format!(
                "no leader of the scheduler answered within {}s (is a worker with schedules running?); \
                 the request expired with it, so {name} did not run and will not",
                after.as_secs()
            ),
        ),
        jobs_core::Error::Unroutable { .. } => Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "{name} did not run: no worker with schedules has run on this vhost (no queue takes Run now requests)"
            ),
        ),
        jobs_core::Error::CallFailed { error, .. } => {
            Refusal::new(StatusCode::BAD_GATEWAY, format!("the scheduler's leader did not run {name}: {error}"))
        }
        other => Refusal::broker(other),
    }
}

/// What a Run now enqueued.
pub(crate) async fn run_page(
    State(dashboard): State<Arc<Dashboard>>,
    base: Base,
    Extension(csrf): Extension<Csrf>,
    Path((name, id)): Path<(String, String)>,
) -> Result<Response, Refusal> {
    schedule_name(&name)?;
    let run = id.parse().ok().and_then(|id| dashboard.runs.get(id)).filter(|r| r.schedule == name);
    let Some(run) = run else {
        return Err(Refusal::new(
            StatusCode::NOT_FOUND,
            format!("no such Run now (the dashboard keeps the last {})", crate::runs::KEPT),
        ));
    };
    Ok(render(&super::bulk::ActionPage {
        page: page(&dashboard, base.clone(), "schedules", &csrf),
        running: false,
        message: format!("Enqueued {} now as job {}", run.schedule, run.job),
        detail: format!(
            "The scheduler's leader enqueued it at {}, once, under a fresh id; it runs like any job of its type, \
             and the schedule's ticks go on as before.",
            time(run.at_ms)
        ),
        back: format!("{}/schedules", base.0),
        back_text: "Back to the schedules".into(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::History;
    use jobs_core::plumbing::events::{Heartbeat, SchedulerBeat};

    const T0: u64 = 100 * 86_400_000;

    fn beat(worker: &str, at_ms: u64, scheduler: Option<SchedulerBeat>) -> Heartbeat {
        Heartbeat {
            worker: worker.into(),
            host: "h".into(),
            pid: 7,
            version: "0".into(),
            started_at_ms: T0 - 60_000,
            sent_at_ms: at_ms,
            interval_ms: 5000,
            queues: vec!["q".into()],
            exchanges: vec![],
            concurrency: 1,
            stopping: false,
            running: vec![],
            counts: vec![],
            scheduler,
            batches: None,
            limits: vec![],
            rates: vec![],
            unique_keys: None,
            weights: vec![],
        }
    }

    fn nightly() -> ScheduleBeat {
        ScheduleBeat {
            name: "nightly".into(),
            cron: "0 3 * * *".into(),
            time_zone: "Europe/Berlin".into(),
            job_type: "Report".into(),
            catch_up: "last".into(),
            enabled: true,
            digest: "00000000000000aa".into(),
            last_fired_ms: Some(T0 - 30_000),
            last_lateness_ms: Some(12),
            next_ms: vec![T0 + 60_000, T0 + 120_000, T0 + 180_000],
        }
    }

    fn leading(digest: &str) -> Option<SchedulerBeat> {
        Some(SchedulerBeat { leading: true, digest: digest.into(), schedules: vec![nightly()] })
    }

    fn following(digest: &str) -> Option<SchedulerBeat> {
        Some(SchedulerBeat { leading: false, digest: digest.into(), schedules: vec![] })
    }

    /// The rows `History::workers` gives at `T0` for `beats`.
    fn rows(beats: Vec<Heartbeat>) -> Vec<WorkerRow> {
        let mut history = History::new(Duration::from_secs(86_400));
        for (offset, beat) in beats.into_iter().enumerate() {
            history.add(offset as u64, beat);
        }
        history.workers(T0)
    }

    #[test]
    fn the_live_worker_that_says_it_leads_leads_and_differing_definitions_are_listed() {
        let rows = rows(vec![
            beat("a-follower", T0 - 1000, following("d1")),
            beat("b-leader", T0 - 2000, leading("d1")),
            beat("c-old-deploy", T0 - 1000, following("d0")),
            beat("d-no-schedules", T0 - 1000, None),
        ]);
        let state = leadership(&rows);
        assert_eq!(state.leader.map(|w| w.id.as_str()), Some("b-leader"));
        assert_eq!(state.differing, ["c-old-deploy"], "the follower with the leader's digest is not listed");
        assert!(state.also_leading.is_empty());
        assert_eq!(state.with_schedules, 3);
        assert_eq!(state.schedules().iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["nightly"]);
        let json = serde_json::to_value(ScheduleRow::of(&state.schedules()[0])).unwrap();
        assert_eq!(
            json,
            serde_json::json!({ "name": "nightly", "cron": "0 3 * * *", "time_zone": "Europe/Berlin",
                "job_type": "Report", "catch_up": "last", "enabled": true, "last_fired_ms": T0 - 30_000,
                "last_lateness_ms": 12, "next_ms": [T0 + 60_000, T0 + 120_000, T0 + 180_000] })
        );
    }

    #[test]
    fn of_several_that_say_they_lead_the_newest_beat_leads_and_the_others_are_noted() {
        let rows = rows(vec![
            beat("x", T0 - 3000, leading("d1")),
            beat("y", T0 - 500, leading("d2")),
            beat("z", T0 - 500, following("d1")),
        ]);
        let state = leadership(&rows);
        assert_eq!(state.leader.map(|w| w.id.as_str()), Some("y"));
        assert_eq!(state.also_leading, ["x"]);
        assert_eq!(state.differing, ["x", "z"], "their definitions are not the leader's");
    }

    #[test]
    fn stopped_and_vanished_workers_lead_nothing() {
        let mut stopped = beat("stopped", T0 - 1000, leading("d1"));
        stopped.stopping = true;
        let vanished = beat("vanished", T0 - 60_000, leading("d1"));
        let rows = rows(vec![stopped, vanished, beat("live", T0 - 1000, following("d2"))]);
        let state = leadership(&rows);
        assert!(state.leader.is_none(), "{:?}", state.leader.map(|w| &w.id));
        assert!(state.differing.is_empty() && state.schedules().is_empty());
        assert_eq!(state.with_schedules, 1);
        assert!(state.why_none().contains("1 live worker with schedules, and no latest beat says it leads"));
        // The one that says so is live: it leads, and the stale ones are no "others".
        let rows =
            self::rows(vec![beat("vanished", T0 - 60_000, leading("d0")), beat("new", T0 - 1000, leading("d1"))]);
        let state = leadership(&rows);
        assert_eq!(state.leader.map(|w| w.id.as_str()), Some("new"));
        assert!(state.also_leading.is_empty() && state.differing.is_empty());
    }

    #[test]
    fn without_workers_with_schedules_none_leads_and_the_workers_page_marks_the_leader() {
        let none = rows(vec![beat("plain", T0 - 1000, None)]);
        let state = leadership(&none);
        assert!(state.leader.is_none() && state.schedules().is_empty());
        assert_eq!(state.why_none(), "No worker leads the scheduler: no worker with schedules is running.");
        assert!(leadership(&[]).leader.is_none());
        let mut marked = rows(vec![beat("a", T0 - 1000, following("d")), beat("b", T0 - 1000, leading("d"))]);
        mark_leader(&mut marked);
        let flags: Vec<(&str, bool)> = marked.iter().map(|w| (w.id.as_str(), w.scheduler_leader)).collect();
        assert_eq!(flags, [("a", false), ("b", true)]);
    }

    fn dashboard(beats: Vec<Heartbeat>) -> Arc<Dashboard> {
        let dashboard = Dashboard::new(jobs_core::AmqpConfig::default(), crate::WebConfig::default()).unwrap();
        for (offset, beat) in beats.into_iter().enumerate() {
            dashboard.history().add(offset as u64, beat);
        }
        dashboard
    }

    fn html(dashboard: &Dashboard) -> String {
        let csrf = Csrf("0".repeat(32));
        schedules_page(dashboard, Base("/jobs".into()), &csrf, T0).render().unwrap()
    }

    #[test]
    fn the_page_shows_the_leader_its_schedules_and_who_differs() {
        let mut odd = nightly();
        odd.name = "odd/name ?".into();
        odd.last_fired_ms = None;
        odd.last_lateness_ms = None;
        odd.enabled = false;
        let leader = SchedulerBeat { leading: true, digest: "d1".into(), schedules: vec![nightly(), odd] };
        let page = html(&dashboard(vec![
            beat("w-leader", T0 - 2000, Some(leader)),
            beat("w-old", T0 - 1000, following("d0")),
        ]));
        assert!(page.contains("<span id=\"leader\">w-leader</span>"), "{page}");
        assert!(page.contains("w-old run other schedule definitions; the leader's win"), "{page}");
        assert!(page.contains("1970-04-10 23:59:30 UTC (30s ago)"), "last run: {page}");
        assert!(page.contains("12 ms"), "{page}");
        assert!(page.contains("1970-04-11 00:01:00 UTC (in 1m)"), "next runs: {page}");
        assert!(page.contains("href=\"/jobs/schedules/odd%2Fname%20%3F/run\""), "Run now, encoded: {page}");
        assert!(page.contains("no (never fires)") && page.contains("not yet"), "{page}");
        assert!(page.contains("class=\"on\">Schedules</a>"), "the nav link: {page}");
    }

    #[test]
    fn the_page_says_when_no_worker_leads() {
        let page = html(&dashboard(vec![beat("plain", T0 - 1000, None)]));
        assert!(page.contains("No worker leads the scheduler: no worker with schedules is running."), "{page}");
        assert!(!page.contains("id=\"schedules\""), "{page}");
    }

    #[test]
    fn schedule_names_in_paths_are_checked() {
        assert!(schedule_name("nightly-report").is_ok() && schedule_name("odd/name ?").is_ok());
        for bad in ["", "  ", "a\nb", &"x".repeat(MAX_NAME + 1)] {
            assert!(schedule_name(bad).is_err(), "{bad:?}");
        }
    }
}
