//! Tutorial 2's `new_task`: `manager First message.` enqueues one [`examples::Task`]
//! on `task_queue` (default message "Hello World!") and returns once it is confirmed.

use std::process::ExitCode;

use clap::Parser;
use jobs_core::Client;

/// Enqueues one task (tutorial 2): a worker takes a second per `.` in its message.
#[derive(Parser)]
struct Args {
    /// The message [default: Hello World!].
    message: Vec<String>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let message = if args.message.is_empty() { "Hello World!".to_owned() } else { args.message.join(" ") };
    let result = async {
        let client = Client::new(examples::amqp_config()?);
        let id = client.enqueue(&examples::Task { message: message.clone() }).await;
        client.close().await;
        Ok::<_, Box<dyn std::error::Error>>(id?)
    };
    match result.await {
        Ok(id) => {
            println!(" [x] Sent '{message}' (job {id})");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {}", jobs_core::report(&*err));
            ExitCode::FAILURE
        }
    }
}
