//! Tutorial 6's `rpc_client`: `rpc_client 30` asks an `rpc_server` for fib(30)
//! and prints the answer.

use std::process::ExitCode;

use clap::Parser;
use examples::tutorials::Fib;
use jobs_core::Client;

/// Asks an `rpc_server` for a Fibonacci number (tutorial 6) and prints the answer.
#[derive(Parser)]
struct Args {
    /// Which Fibonacci number.
    #[arg(default_value_t = 30)]
    n: u32,
}

#[tokio::main]
async fn main() -> ExitCode {
    let n = Args::parse().n;
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
