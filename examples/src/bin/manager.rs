//! Tutorial 2's `new_task`: `manager First message.` enqueues one [`examples::Task`]
//! on `task_queue` (default message "Hello World!") and returns once it is confirmed.

use std::process::ExitCode;

use jobs_core::Client;

#[tokio::main]
async fn main() -> ExitCode {
    let words: Vec<String> = std::env::args().skip(1).collect();
    let message = if words.is_empty() { "Hello World!".to_owned() } else { words.join(" ") };
    let result = async {
        let client = Client::new(examples::amqp_config()?);
        let id = client.enqueue(&examples::Task { message: message.clone() }).await?;
        client.close().await;
        Ok::<_, Box<dyn std::error::Error>>(id)
    };
    match result.await {
        Ok(id) => {
            println!(" [x] Sent '{message}' (job {id})");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}
