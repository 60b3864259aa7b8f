//! The admin commands of every worker binary: `worker dead list|retry|purge`.
//! Exit codes: 0 done, 1 error, 2 an `--id` that matched no dead job.

use std::process::ExitCode;

use jobs_core::{DeadFilter, DeadLetters};

use crate::{Cli, Command, DeadAction, Settings};

pub(crate) fn main(cli: Cli) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {}", jobs_core::report(&*err));
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let settings = Settings::load(&cli.config_source())?;
    let Some(Command::Dead { action }) = cli.command else { return Ok(ExitCode::SUCCESS) };
    let dead = DeadLetters::connect(&settings.amqp).await?;
    let code = match action {
        DeadAction::List { queue, limit, json } => {
            let jobs = dead.list(&queue, limit).await?;
            for job in &jobs {
                if json {
                    println!("{}", serde_json::to_string(job)?);
                } else {
                    println!(
                        "{}  {}  attempt {}  {}: {}",
                        job.id,
                        job.job_type.as_deref().unwrap_or("-"),
                        job.attempt.unwrap_or(1),
                        job.error_kind.as_deref().unwrap_or("-"),
                        job.error.as_deref().unwrap_or("-")
                    );
                }
            }
            if !json {
                eprintln!("{} dead job(s) listed from {queue}.dead", jobs.len());
            }
            ExitCode::SUCCESS
        }
        DeadAction::Retry { queue, which } => {
            report("retried", &which.filter(), dead.retry(&queue, &which.filter()).await?)
        }
        DeadAction::Purge { queue, which } => {
            report("purged", &which.filter(), dead.purge(&queue, &which.filter()).await?)
        }
    };
    dead.close().await;
    Ok(code)
}

fn report(what: &str, filter: &DeadFilter, n: usize) -> ExitCode {
    println!("{what} {n} dead job(s)");
    if n == 0 && matches!(filter, DeadFilter::Id(_)) {
        eprintln!("no dead job has that id");
        return ExitCode::from(2);
    }
    ExitCode::SUCCESS
}
