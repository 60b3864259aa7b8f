//! `workflow_batch 10000`: enqueues a batch of that many invoices on
//! `workflows` (each taking `--millis`, `--dead` of them failing) with a
//! `Report` callback on complete and on success (see `docs/workflows.md`),
//! and prints the batch id once every job is confirmed. `worker -q
//! workflows` runs them; `worker batches` shows the batch.

use std::process::ExitCode;

use clap::Parser;
use examples::workflows::{Invoice, Report};
use jobs_core::{Batch, Client};

/// Enqueues a batch of invoices with callbacks.
#[derive(Parser)]
struct Args {
    /// How many invoices.
    #[arg(default_value_t = 1000)]
    count: u64,
    /// How long each takes, in milliseconds.
    #[arg(long, default_value_t = 10)]
    millis: u64,
    /// How many of them go dead (the first ones).
    #[arg(long, default_value_t = 0)]
    dead: u64,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let result = async {
        let client = Client::new(examples::amqp_config()?);
        let invoices: Vec<Invoice> =
            (0..args.count).map(|n| Invoice { n, millis: args.millis, fail: n < args.dead }).collect();
        let batch = Batch::new()
            .description(format!("{} invoices", args.count))
            .on_complete(&Report)
            .on_success(&Report)
            .jobs(&invoices);
        let id = client.enqueue_batch(batch).await;
        client.close().await;
        Ok::<_, Box<dyn std::error::Error>>(id?)
    };
    match result.await {
        Ok(id) => {
            println!(" [x] batch {id} enqueued: {} invoices", args.count);
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {}", jobs_core::report(&*err));
            ExitCode::FAILURE
        }
    }
}
