//! `worker batches [--json]`: the batches the record `jobs.batches` tells of,
//! read back as the aggregator reads it (from its last snapshot on), so it
//! needs no worker running: the open batches with their counts and the
//! callbacks due and not fired yet, then those that ended lately.

use std::process::ExitCode;

use jobs_core::plumbing::batch_book::{Book, State};
use jobs_core::plumbing::topology::Declarer;
use jobs_core::plumbing::{close_connection, connect, Publisher};
use jobs_core::BATCHES;

use crate::batches::{rebuild_on, Rebuilt};
use crate::Settings;

/// Prints the open and recent batches.
pub(crate) async fn list(settings: &Settings, json: bool) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let book = read(settings).await?;
    let mut open: Vec<&State> = book.batches().filter(|s| s.definition.is_some()).collect();
    open.sort_by_key(|s| std::cmp::Reverse(s.definition.as_ref().map_or(0, |d| d.at_ms)));
    let mut rows: Vec<serde_json::Value> = open.iter().map(|state| row(state)).collect();
    rows.extend(book.recent().map(|done| {
        serde_json::json!({
            "id": done.batch,
            "description": done.description,
            "state": "succeeded",
            "total": done.counts.total,
            "succeeded": done.counts.succeeded,
            "dead": done.counts.dead,
            "pending": [],
        })
    }));
    if json {
        for row in &rows {
            println!("{row}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<26} {:<10} {:>8} {:>10} {:>6}  {:<18} description",
        "batch", "state", "total", "succeeded", "dead", "pending"
    );
    for row in &rows {
        let pending: Vec<&str> = row["pending"].as_array().into_iter().flatten().filter_map(|v| v.as_str()).collect();
        println!(
            "{:<26} {:<10} {:>8} {:>10} {:>6}  {:<18} {}",
            row["id"].as_str().unwrap_or("-"),
            row["state"].as_str().unwrap_or("-"),
            row["total"],
            row["succeeded"],
            row["dead"],
            if pending.is_empty() { "-".to_owned() } else { pending.join(", ") },
            row["description"].as_str().unwrap_or("")
        );
    }
    eprintln!("{} open batch(es), {} ended lately", open.len(), rows.len() - open.len());
    Ok(ExitCode::SUCCESS)
}

/// An open batch: `enqueueing` (not sealed), `running`, `complete` (every
/// member ended, some dead).
fn row(state: &State) -> serde_json::Value {
    let counts = state.counts();
    let definition = state.definition.as_ref();
    serde_json::json!({
        "id": definition.map(|d| d.batch.as_str()),
        "description": definition.and_then(|d| d.description.as_deref()),
        "state": counts.phase(state.sealed),
        "at_ms": definition.map(|d| d.at_ms),
        "total": counts.total,
        "succeeded": counts.succeeded,
        "dead": counts.dead,
        "dead_ids": state.dead_ids(20),
        "fired": state.fired.iter().map(|k| k.as_str()).collect::<Vec<_>>(),
        "pending": state.due().iter().map(|k| k.as_str()).collect::<Vec<_>>(),
        "on_complete": definition.and_then(|d| d.on_complete.as_ref()).map(|c| c.name.as_str()),
        "on_success": definition.and_then(|d| d.on_success.as_ref()).map(|c| c.name.as_str()),
    })
}

async fn read(settings: &Settings) -> Result<Book, Box<dyn std::error::Error>> {
    let connection = connect(&settings.amqp, "jobs-admin").await?;
    let result = async {
        let declarer = Declarer::open(&connection).await?;
        BATCHES.declare(&declarer).await?;
        declarer.close().await;
        let publisher = Publisher::open(&connection, settings.amqp.confirm_timeout).await?;
        let Rebuilt { book, reader, .. } = rebuild_on(&connection, &publisher)
            .await
            .map_err(|why| jobs_core::Error::QueueRead { queue: BATCHES.name().into(), reason: why })?;
        reader.close().await;
        Ok::<_, jobs_core::Error>(book)
    }
    .await;
    close_connection(connection).await;
    let mut book = result?;
    book.prune(crate::batches::now_ms(), true);
    Ok(book)
}
