//! `workflow_chain cat.jpg ann`: enqueues a chain of three steps on
//! `workflows` (resize, then upload, then notify, each handing its result to
//! the next; see `docs/workflows.md`) and prints the steps' ids. `worker -q
//! workflows` runs it.

use std::process::ExitCode;

use clap::Parser;
use examples::workflows::{Notify, Resize, Upload};
use jobs_core::{chain, Client};

/// Enqueues a chain: resize an image, upload it, tell its user where it is.
#[derive(Parser)]
struct Args {
    /// The image.
    #[arg(default_value = "cat.jpg")]
    image: String,
    /// Whom to tell.
    #[arg(default_value = "ann")]
    user: String,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let result = async {
        let client = Client::new(examples::amqp_config()?);
        let chain = chain![
            Resize { path: args.image.clone() },
            Upload { bucket: "photos".into() },
            Notify { user: args.user.clone() }
        ];
        let ids = client.enqueue_chain(chain).await;
        client.close().await;
        Ok::<_, Box<dyn std::error::Error>>(ids?)
    };
    match result.await {
        Ok(ids) => {
            println!(
                " [x] chain {} enqueued: steps {}",
                ids[0],
                ids.iter().map(|id| id.as_str()).collect::<Vec<_>>().join(", ")
            );
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {}", jobs_core::report(&*err));
            ExitCode::FAILURE
        }
    }
}
