//! `charge 6`: enqueues six [`examples::flow::ChargeCard`] jobs of 2 s on
//! `charges` (at most two run at once across every worker), printing their ids.

use std::process::ExitCode;

use clap::Parser;
use jobs_core::Client;

/// Enqueues charges: a worker runs at most two at once across the vhost.
#[derive(Parser)]
struct Args {
    /// How many [default: 6].
    #[arg(default_value_t = 6)]
    count: u64,
    /// How long each takes, milliseconds.
    #[arg(long, default_value_t = 2000)]
    millis: u64,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let result = async {
        let client = Client::new(examples::amqp_config()?);
        for customer in 1..=args.count {
            let id = client.enqueue(&examples::flow::ChargeCard { customer, millis: args.millis }).await?;
            println!(" [x] charge of customer {customer}: job {id}");
        }
        client.close().await;
        Ok::<_, Box<dyn std::error::Error>>(())
    };
    match result.await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {}", jobs_core::report(&*err));
            ExitCode::FAILURE
        }
    }
}
