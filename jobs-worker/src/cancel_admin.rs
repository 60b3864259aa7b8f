//! `worker cancel <job-id>`: appends the cancel to `jobs.control`, then
//! listens there for what the workers say back, to tell which happened: the
//! job runs on a worker, which told it to stop (and then dead-lettered it),
//! or no worker runs it now and the cancel waits for it to come up from its
//! queue or its delay. Nothing indexes queued jobs, so "not running" is
//! "no worker said it runs the job within [`LISTEN`]".

use std::process::ExitCode;
use std::time::Duration;

use jobs_core::plumbing::topology::Declarer;
use jobs_core::plumbing::{close_connection, connect, JournalReader, Publisher, StartAt, CONTROL_KIND};
use jobs_core::{ControlCommand, CONTROL};

use crate::Settings;

/// How long to wait for a worker running the job to say so.
const LISTEN: Duration = Duration::from_secs(3);

/// What the workers said about a cancel.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Heard {
    /// Running on this worker, told to stop.
    Running(String),
    /// Dead-lettered as cancelled by this worker; it was running when cancelled.
    Cancelled { worker: String, running: bool },
}

/// Cancels the job `id` and says what became of it.
pub(crate) async fn cancel(settings: &Settings, id: &str) -> Result<ExitCode, Box<dyn std::error::Error>> {
    if id.is_empty() || id.len() > 255 {
        return Err("a job id is 1 to 255 bytes".into());
    }
    let connection = connect(&settings.amqp, "jobs-cancel").await?;
    let declarer = Declarer::open(&connection).await?;
    CONTROL.declare(&declarer).await?;
    declarer.close().await;
    // Listening before the cancel is appended: no answer can come before it.
    let mut reader = CONTROL.read(&connection, StartAt::Next).await?;
    let publisher = Publisher::open(&connection, settings.amqp.confirm_timeout).await?;
    let command = ControlCommand::cancel(id, crate::admin::who());
    CONTROL.append(&publisher, CONTROL_KIND, command.encode()?).await?;
    let grace = settings.worker.cancel_grace;
    let retention = humantime::format_duration(settings.worker.cancel_retention);
    let mut heard = listen(&mut reader, id, LISTEN).await;
    if let Some(Heard::Running(worker)) = &heard {
        println!(
            "cancelling {id}: it runs on {worker}, which told it to stop (ctx.is_cancelled()); it is dropped if it has not stopped within worker.cancel_grace ({})",
            humantime::format_duration(grace)
        );
        // Its settling follows its stop, or the grace. (Another worker's
        // `Cancelling`, for a copy running twice, is skipped.)
        let deadline = tokio::time::Instant::now() + grace + Duration::from_secs(10);
        while let Some(Heard::Running(_)) = &heard {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match listen(&mut reader, id, left).await {
                Some(word @ Heard::Cancelled { .. }) => heard = Some(word),
                Some(Heard::Running(_)) if !left.is_zero() => {}
                _ => break,
            }
        }
    }
    match heard {
        Some(Heard::Cancelled { worker, running }) => {
            let when = if running { "while it ran" } else { "as it came up from its queue or its delay" };
            println!("cancelled {id} {when}, on {worker}: dead-lettered as `cancelled` (`worker dead retry` runs it again)");
        }
        Some(Heard::Running(worker)) => println!(
            "{worker} has not said yet that it dead-lettered {id}: it has been told to stop; see `worker dead list`"
        ),
        None => println!(
            "recorded the cancel of {id}: no worker runs it now; it is dead-lettered as `cancelled` when it comes up from its queue or its delay (the cancel is kept for worker.cancel_retention, {retention})"
        ),
    }
    reader.close().await;
    close_connection(connection).await;
    Ok(ExitCode::SUCCESS)
}

/// The first word of the workers about the job `id` within `limit`.
async fn listen(reader: &mut JournalReader, id: &str, limit: Duration) -> Option<Heard> {
    let deadline = tokio::time::Instant::now() + limit;
    while let Ok(Some((_, kind, body))) = tokio::time::timeout_at(deadline, reader.next()).await {
        match ControlCommand::of_record(kind.as_deref(), &body) {
            Some(ControlCommand::Cancelling { id: of, worker, .. }) if of == id => return Some(Heard::Running(worker)),
            Some(ControlCommand::Cancelled { id: of, worker, running, .. }) if of == id => {
                return Some(Heard::Cancelled { worker, running });
            }
            _ => {}
        }
    }
    None
}
