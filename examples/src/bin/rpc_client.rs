//! Tutorial 6's `rpc_client`: `rpc_client 30` asks an `rpc_server` for fib(30)
//! and prints the answer.

use std::process::ExitCode;

use examples::tutorials::Fib;
use jobs_core::Client;

#[tokio::main]
async fn main() -> ExitCode {
    let n = match std::env::args().nth(1).map(|a| a.parse::<u32>()) {
        None => 30,
        Some(Ok(n)) => n,
        Some(Err(_)) => {
            eprintln!("Usage: rpc_client [n]");
            return ExitCode::FAILURE;
        }
    };
    println!(" [x] Requesting fib({n})");
    let result = async {
        let client = Client::new(examples::amqp_config()?);
        let answer = client.call(&Fib { n }).await;
        client.close().await;
        Ok::<_, Box<dyn std::error::Error>>(answer?)
    };
    match result.await {
        Ok(answer) => {
            println!(" [.] Got {answer}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {}", jobs_core::report(&*err));
            ExitCode::FAILURE
        }
    }
}
