//! Connects as `JOBS__AMQP__URL` says and prints how it went: what an app
//! outside the workspace, with the `[patch.crates-io]` entry for amqprs of
//! `docs/configuration.md`, hears of a wrong password.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let config = match jobs_core::AmqpConfig::load() {
        Ok(config) => config,
        Err(err) => {
            eprintln!("error: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match jobs_core::Client::connect(config).await {
        Ok(client) => {
            client.close().await;
            println!("connected");
            std::process::ExitCode::SUCCESS
        }
        Err(err) => {
            println!("error: {}", jobs_core::report(&err));
            println!("login refused: {}", matches!(err, jobs_core::Error::LoginRefused { .. }));
            std::process::ExitCode::FAILURE
        }
    }
}
