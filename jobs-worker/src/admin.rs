//! The admin commands of every worker binary: `worker queues`,
//! `worker enqueue <job-type> --json '{..}'`, `worker dead list|retry|purge`,
//! `worker schedules [--json]`, `worker schedules run <name>`.
//! Exit codes: 0 done, 1 error (broker, config), 2 bad input (an `--id` that
//! matched no dead job, an unknown job type, JSON that does not fit the type).

use std::process::ExitCode;

use jobs_core::plumbing::topology::{dead_queue, queue_counts};
use jobs_core::plumbing::{
    close_connection, connect, enqueue_encoded, hostname, read_paused, tag_worker, Management, Publisher,
};
use jobs_core::{Client, ControlCommand, DeadFilter, DeadLetters, EnqueueOptions, Found, Progress, Route};

use crate::{Cli, Command, DeadAction, Jobs, QueueAction, ScheduleAction, Settings};

pub(crate) async fn run(cli: Cli, jobs: &Jobs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let settings = Settings::load(&cli.config_source())?;
    let action = match cli.command {
        Some(Command::Dead { action }) => action,
        Some(Command::Queues { action: Some(action), .. }) => return pause(&settings, action).await,
        Some(Command::Queues { json, action: None }) => return queues(&settings, jobs, json).await,
        Some(Command::Schedules { action: Some(ScheduleAction::Run { name }), .. }) => {
            return crate::schedules_admin::run_now(&settings, &name).await
        }
        Some(Command::Batches { json }) => return crate::batches_admin::list(&settings, json).await,
        Some(Command::Cancel { job_id }) => return crate::cancel_admin::cancel(&settings, &job_id).await,
        Some(Command::Schedules { json, action: None }) => {
            return crate::schedules_admin::list(&settings, jobs, json).await
        }
        Some(Command::Enqueue { job_type, json, delay, routing_key, priority, expires_in }) => {
            let mut options = EnqueueOptions::new();
            options.delay = delay;
            options.routing_key = routing_key;
            options.priority = priority;
            if let Some(within) = expires_in {
                options = options.expires_in(within);
            }
            return enqueue(&settings, jobs, &job_type, &json, options).await;
        }
        _ => return Ok(ExitCode::SUCCESS),
    };
    let dead = DeadLetters::connect(&settings.amqp).await?;
    let code = match action {
        DeadAction::List { queue, limit, json } => {
            let total = dead.count(&queue).await?;
            let jobs = dead.list(&queue, limit).await?;
            for job in &jobs {
                if json {
                    println!("{}", serde_json::to_string(job)?);
                } else {
                    let chain = job.chain.as_ref().map_or(String::new(), |c| {
                        format!("  (step {} of {} of chain {}; a retry runs on)", c.step, c.of, c.chain)
                    });
                    println!(
                        "{}  {}  attempt {}  {}: {}{chain}",
                        job.id,
                        job.job_type.as_deref().unwrap_or("-"),
                        job.attempt.unwrap_or(1),
                        job.error_kind.as_deref().unwrap_or("-"),
                        job.error.as_deref().unwrap_or("-")
                    );
                }
            }
            if !json {
                eprintln!("{} of {total} dead job(s) listed from {queue}.dead, oldest first", jobs.len());
            }
            ExitCode::SUCCESS
        }
        DeadAction::Show { queue, id } => match dead.find(&queue, &id, u64::MAX).await? {
            Found::Job(job) => {
                println!("{}", serde_json::to_string_pretty(&job)?);
                ExitCode::SUCCESS
            }
            Found::Missing { scanned, total, complete: true } => {
                eprintln!("no dead job has that id (read all {scanned} of {total})");
                ExitCode::from(2)
            }
            Found::Missing { scanned, total, complete: false } => {
                eprintln!(
                    "no dead job has that id among the {scanned} of {total} read: another reader held the others; run it again"
                );
                ExitCode::FAILURE
            }
            _ => ExitCode::from(2),
        },
        DeadAction::Retry { queue, which, force } => {
            let filter = if force { which.filter().force() } else { which.filter() };
            report("retried", &filter, dead.retry_with(&queue, &filter, progress("retried")).await?)
        }
        DeadAction::Purge { queue, which } => {
            let filter = which.filter();
            report("purged", &filter, dead.purge_with(&queue, &filter, progress("purged")).await?)
        }
    };
    dead.close().await;
    Ok(code)
}

/// Tells a long retry or purge's progress on stderr, every few seconds.
fn progress(what: &'static str) -> impl FnMut(&Progress) {
    let mut last = std::time::Instant::now();
    move |done| {
        if last.elapsed() >= std::time::Duration::from_secs(2) && done.scanned < done.total {
            eprintln!("{what} {} so far; read {} of {} dead job(s)", done.acted, done.scanned, done.total);
            last = std::time::Instant::now();
        }
    }
}

/// What a retry or purge did; exit code 1 when jobs it took stayed dead, 2 when an `--id` matched none.
fn report(what: &str, filter: &DeadFilter, done: Progress) -> ExitCode {
    println!("{what} {} dead job(s)", done.acted);
    if done.failed > 0 {
        let why = done.first_failure.as_deref().unwrap_or("refused");
        eprintln!("{} stay dead: the broker refused their copies (the first: {why})", done.failed);
    }
    if done.held > 0 {
        let first = done.first_held.as_deref().unwrap_or("");
        eprintln!(
            "{} stay dead: another job holds their unique key (the first: {first}); --force retries them anyway",
            done.held
        );
    }
    if done.not_reached > 0 {
        eprintln!("{} not reached: another reader held them; run it again", done.not_reached);
    }
    if done.acted == 0 && filter.is_id() && done.failed == 0 && done.not_reached == 0 && done.held == 0 {
        eprintln!("no dead job has that id");
        return ExitCode::from(2);
    }
    if done.failed > 0 || done.not_reached > 0 || done.held > 0 {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// Ready jobs and consumers of each queue of the linked job types, and its dead count.
async fn queues(settings: &Settings, jobs: &Jobs, json: bool) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let mut names: Vec<&str> =
        jobs.registrations().iter().filter(|r| r.route() == Route::Queue).map(|r| r.queue()).collect();
    names.sort_unstable();
    names.dedup();
    let connection = connect(&settings.amqp, "jobs-admin").await?;
    let management = Management::new(&settings.amqp);
    // Reading to a mark appends one (a few bytes); a user who may not write
    // to jobs.control gets the counts without the state.
    let paused = match Publisher::open(&connection, settings.amqp.confirm_timeout).await {
        Ok(publisher) => read_paused(&connection, &publisher).await,
        Err(err) => Err(err),
    };
    let (paused, known) = match paused {
        Ok((paused, reader)) => {
            reader.close().await;
            (paused, true)
        }
        Err(err) => {
            eprintln!("cannot read jobs.control ({}): paused state not shown", jobs_core::report(&err));
            (jobs_core::Paused::default(), false)
        }
    };
    // Paused queues no linked type names (`extra_queues`) are listed too.
    for queue in paused.queues().keys() {
        if !names.contains(&queue.as_str()) {
            names.push(queue.as_str());
        }
    }
    // This config's weights, for `weight 6 of 10`.
    let weights: u32 = settings.worker.queue_weights.values().map(|&w| u32::from(w)).sum();
    if !json {
        println!("{:<40} {:>10} {:>10} {:>10} {:>10}  state", "queue", "ready", "unacked", "consumers", "dead");
    }
    for name in names {
        let (ready, consumers) = queue_counts(&connection, name).await.unzip();
        let dead = queue_counts(&connection, &dead_queue(name)).await.map(|c| c.0);
        let unacked = management.queue(name).await.map(|stats| stats.unacked);
        let show = |n: Option<u64>| n.map(|n| n.to_string()).unwrap_or_else(|| "-".into());
        let (ready, consumers, dead) = (ready.map(u64::from), consumers.map(u64::from), dead.map(u64::from));
        let pause = paused.queues().get(name);
        // A limited type's own queue: its limit (its unacked jobs are those running).
        let own = jobs.registrations().iter().filter(|r| r.queue() == name).copied().collect::<Vec<_>>();
        let entry = |r: &jobs_core::plumbing::Registration| settings.limits.iter().find(|l| l.job == r.name());
        let max_running = own.iter().find_map(|r| entry(r).and_then(|l| l.max_running).or(r.max_running()));
        // Its rate, each key of the config's over the derive's: "100/s", "5/s per customer_id".
        let rate = own.iter().find_map(|r| {
            let rate = entry(r).and_then(|l| l.rate.clone()).or_else(|| r.rate().map(|rate| rate.to_string()))?;
            Some(match entry(r).and_then(|l| l.rate_key.clone()).or_else(|| r.rate_key().map(str::to_owned)) {
                Some(key) => format!("{rate} per {key}"),
                None => rate,
            })
        });
        // Its unique types: "RebuildIndex for 30m by index".
        let unique: Vec<String> = own.iter().filter_map(|r| unique_words(r)).collect();
        // Priorities (classic queues: x-max-priority 9) and this config's weight.
        let priorities = jobs_core::plumbing::queue_has_priorities(name);
        let weight = settings.worker.queue_weights.get(name).copied();
        if json {
            let line = serde_json::json!({
                "queue": name, "ready": ready, "unacked": unacked, "consumers": consumers, "dead": dead,
                "paused": known.then_some(pause.is_some()), "paused_by": pause.map(|p| &p.by), "paused_at_ms": pause.map(|p| p.at_ms),
                "max_running": max_running, "rate": rate, "unique": unique,
                "priorities": priorities, "weight": weight,
            });
            println!("{line}");
        } else {
            let mut state = match pause {
                Some(p) => format!("paused by {}", p.by),
                None if known => "running".to_owned(),
                None => "-".to_owned(),
            };
            if let Some(max) = max_running {
                state.push_str(&format!(", at most {max} running"));
            }
            if let Some(rate) = &rate {
                state.push_str(&format!(", at most {rate}"));
            }
            if !unique.is_empty() {
                state.push_str(&format!(", unique: {}", unique.join("; ")));
            }
            if priorities {
                state.push_str(", priorities 0-9");
            }
            if let Some(weight) = weight {
                state.push_str(&format!(", weight {weight} of {weights}"));
            }
            println!(
                "{name:<40} {:>10} {:>10} {:>10} {:>10}  {state}",
                show(ready),
                show(unacked),
                show(consumers),
                show(dead)
            );
        }
        // An ordered type's shards, each with the worker that runs its jobs now.
        let ordered = own.iter().filter_map(|r| Some((r.name(), r.ordered()?))).next();
        if let Some((job, ordered)) = ordered {
            // Current (a queue's own stats lag seconds); `None` without the management API.
            let active = management.active_consumers().await.ok();
            for (n, shard) in ordered.shard_queues(name).enumerate() {
                // A passive declare counts a single active consumer only: the one running its jobs.
                let (ready, consumers) =
                    queue_counts(&connection, &shard).await.map(|(r, c)| (u64::from(r), u64::from(c))).unzip();
                let holder = active.as_ref().map(|active| {
                    active.iter().find(|(q, _)| *q == shard).map(|(_, tag)| tag_worker(tag, &shard).to_owned())
                });
                let unacked = management.queue(&shard).await.map(|s| s.unacked);
                if json {
                    let line = serde_json::json!({
                        "queue": shard, "shard_of": name, "shard": n, "job": job, "ordered_by": ordered.by,
                        "ready": ready, "unacked": unacked, "held_by": holder.flatten(),
                    });
                    println!("{line}");
                } else {
                    let held = match holder {
                        Some(Some(worker)) => format!("run by {worker}"),
                        Some(None) if consumers.is_some_and(|n| n > 0) => {
                            "its running worker not known yet (the management API's view of consumers lags seconds)"
                                .to_owned()
                        }
                        Some(None) => "no consumer".to_owned(),
                        None => "its worker unknown (no management API)".to_owned(),
                    };
                    println!(
                        "  {shard:<38} {:>10} {:>10} {:>10} {:>10}  shard {n} of {}: {job} one at a time per {}, {held}",
                        show(ready),
                        show(unacked),
                        show(consumers),
                        "-",
                        ordered.shards,
                        ordered.by
                    );
                }
            }
        }
    }
    close_connection(connection).await;
    Ok(ExitCode::SUCCESS)
}

/// A unique type's uniqueness in words: "RebuildIndex for 30m by index",
/// "Digest for 4s by its fields, for the whole window".
fn unique_words(r: &jobs_core::plumbing::Registration) -> Option<String> {
    let window = r.unique_for()?;
    let secs = window.as_secs();
    let span = match secs {
        0 => format!("{}ms", window.as_millis()),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    };
    let by = r.unique_key().map_or_else(|| "its fields".to_owned(), str::to_owned);
    let whole = if r.unique_until() == jobs_core::UniqueUntil::Window { ", for the whole window" } else { "" };
    Some(format!("{} for {span} by {by}{whole}", r.name()))
}

/// `worker queues pause|resume <queue>`: appends the command to
/// `jobs.control`, confirmed; every worker follows it.
async fn pause(settings: &Settings, action: QueueAction) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let by = who();
    let (command, said) = match action {
        QueueAction::Pause { queue } => {
            let said =
                format!("paused {queue}: every worker takes no more of its jobs within 2 s (running ones finish)");
            (ControlCommand::pause(queue, by), said)
        }
        QueueAction::Resume { queue } => {
            let said = format!("resumed {queue}: every worker takes its jobs again");
            (ControlCommand::resume(queue, by), said)
        }
    };
    let client = Client::new(settings.amqp.clone());
    let sent = client.control(&command).await;
    client.close().await;
    sent?;
    println!("{said}");
    Ok(ExitCode::SUCCESS)
}

/// Who gives a command from here: `user@host`.
pub(crate) fn who() -> String {
    let user = std::env::var("USER").or_else(|_| std::env::var("LOGNAME")).unwrap_or_else(|_| "someone".into());
    format!("{user}@{}", hostname())
}

/// Enqueues a job given as JSON, after checking it decodes as its type,
/// through the client's one publish path: to its queue (declared first, with
/// the delay cascade for a delay), or through its exchange (declared first).
async fn enqueue(
    settings: &Settings,
    jobs: &Jobs,
    job_type: &str,
    json: &str,
    options: EnqueueOptions,
) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let Some(registration) = jobs.registrations().iter().copied().find(|r| r.name() == job_type) else {
        let mut known: Vec<&str> = jobs.names();
        known.sort_unstable();
        eprintln!("no job type `{job_type}` in this binary; known: {}", known.join(", "));
        return Ok(ExitCode::from(2));
    };
    let value: serde_json::Value = match serde_json::from_str(json) {
        Ok(value) => value,
        Err(err) => {
            eprintln!("--json is not JSON: {err}");
            return Ok(ExitCode::from(2));
        }
    };
    let body = rmp_serde::to_vec_named(&value)?;
    if let Err(err) = registration.check(&body) {
        eprintln!("--json does not fit job type `{job_type}`: {err}");
        return Ok(ExitCode::from(2));
    }
    let client = Client::new(settings.amqp.clone());
    let enqueued = enqueue_encoded(&client, registration, body, options).await;
    client.close().await;
    match enqueued {
        Ok(id) => {
            println!("{id}");
            Ok(ExitCode::SUCCESS)
        }
        // Options that do not fit the type's route are bad input, as a bad type is.
        Err(err @ (jobs_core::Error::Unsupported(_) | jobs_core::Error::Priority { .. })) => {
            eprintln!("error: {err}");
            Ok(ExitCode::from(2))
        }
        // Not a failure: the job that will run is named, and nothing was sent.
        Err(jobs_core::Error::Duplicate { existing }) => {
            eprintln!("not enqueued: job {existing} holds the same unique key (queued, delayed or running)");
            Ok(ExitCode::from(3))
        }
        Err(err) => Err(err.into()),
    }
}
