//! `worker schedules [--json]` and `worker schedules run <name>`: the
//! schedules of this binary and its config, with what the broker knows of
//! them (the last tick fired, from `jobs.schedule.ticks`; the leader, from
//! the heartbeats in `jobs.events`), and Run now.

use std::collections::HashMap;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use jiff::Timestamp;
use jobs_core::plumbing::events::{epoch_ms, EventReader, Heartbeat};
use jobs_core::plumbing::topology::Declarer;
use jobs_core::plumbing::{close_connection, connect, run_schedule};
use jobs_core::{AmqpConfig, Client, Error as CoreError};

use crate::schedule::resolve;
use crate::scheduler::next_ticks;
use crate::ticks::Ticks;
use crate::{Jobs, Settings};

/// How long `schedules run` waits for the leader's answer.
const RUN_TIMEOUT: Duration = Duration::from_secs(10);
/// How far back beats are read to find the leader.
const BEATS_WINDOW: Duration = Duration::from_secs(60);
/// How long the stream may stay quiet before its reading is taken as complete.
const READ_QUIET: Duration = Duration::from_secs(1);

/// Lists the schedules, with their next ticks, last tick fired and the leader.
pub(crate) async fn list(settings: &Settings, jobs: &Jobs, json: bool) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let schedules = resolve(jobs.schedules(), &settings.schedules, jobs.registrations())?;
    let last = Ticks::new(settings.amqp.clone(), "jobs-admin".into()).last_ticks().await?;
    let leader = leader(&settings.amqp).await?;
    let now = Timestamp::now();
    let rows: Vec<serde_json::Value> = schedules
        .iter()
        .map(|s| {
            let next: Vec<String> =
                if s.enabled { next_ticks(s, now, 3).iter().map(ToString::to_string).collect() } else { Vec::new() };
            serde_json::json!({
                "name": s.name,
                "cron": s.cron_text,
                "time_zone": s.time_zone_name,
                "job": s.registration.name(),
                "catch_up": s.catch_up.as_str(),
                "enabled": s.enabled,
                "next": next,
                "last_fired": last.get(&s.name).map(ToString::to_string),
                "leader": leader,
            })
        })
        .collect();
    if json {
        println!("{}", serde_json::Value::Array(rows));
        return Ok(ExitCode::SUCCESS);
    }
    match &leader {
        Some(leader) => println!("leader: {leader}"),
        None => println!("leader: none (no worker with schedules is running)"),
    }
    println!("{:<28} {:<18} {:<16} {:<22} {:<22}", "schedule", "cron", "time zone", "last fired", "next");
    for row in &rows {
        let text = |key: &str| row[key].as_str().unwrap_or("-").to_owned();
        let next: Vec<&str> = row["next"].as_array().into_iter().flatten().filter_map(|v| v.as_str()).collect();
        let next = if row["enabled"] == false { "(disabled)".to_owned() } else { next.join(", ") };
        println!(
            "{:<28} {:<18} {:<16} {:<22} {next}",
            text("name"),
            text("cron"),
            text("time_zone"),
            text("last_fired")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The worker that leads the scheduler now, from its latest heartbeat: a
/// beat within three of its intervals that says it leads.
async fn leader(amqp: &AmqpConfig) -> Result<Option<String>, CoreError> {
    let connection = connect(amqp, "jobs-admin").await?;
    let result = async {
        let declarer = Declarer::open(&connection).await?;
        amqp.topology().declare_events(&declarer).await?;
        declarer.close().await;
        let beats = EventReader::recent(&connection, SystemTime::now() - BEATS_WINDOW, READ_QUIET).await?;
        let latest: HashMap<String, Heartbeat> = beats.into_iter().map(|b| (b.worker.clone(), b)).collect();
        let now = epoch_ms(SystemTime::now());
        Ok(latest
            .into_values()
            .filter(|b| b.live_at(now) && b.scheduler.as_ref().is_some_and(|s| s.leading))
            .max_by_key(|b| b.sent_at_ms)
            .map(|b| b.worker))
    }
    .await;
    close_connection(connection).await;
    result
}

/// Asks the leader to fire `name` now; prints the job's id.
pub(crate) async fn run_now(settings: &Settings, name: &str) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let client = Client::new(settings.amqp.clone());
    let answer = run_schedule(&client, name, RUN_TIMEOUT).await;
    client.close().await;
    match answer {
        Ok(id) => {
            println!("{id}");
            Ok(ExitCode::SUCCESS)
        }
        Err(CoreError::CallTimeout { after, .. }) => {
            eprintln!("no worker leads the scheduler: none answered within {after:?} (start a worker with schedules)");
            Ok(ExitCode::FAILURE)
        }
        Err(CoreError::Unroutable { .. }) => {
            eprintln!("no worker leads the scheduler: no worker with schedules has run on this vhost");
            Ok(ExitCode::FAILURE)
        }
        Err(CoreError::CallFailed { error, .. }) => {
            eprintln!("the leader did not run it: {error}");
            Ok(ExitCode::from(2))
        }
        Err(err) => Err(err.into()),
    }
}
