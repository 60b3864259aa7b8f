//! Tutorial 1's `send`: one "Hello World!" job to queue `hello` (`--queue` to use another).

use examples::tutorials::Hello;
use jobs_core::EnqueueOptions;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let queue = examples::take_flag(&mut args, "--queue").unwrap_or_else(|| "hello".into());
    let message = if args.is_empty() { "Hello World!".to_owned() } else { args.join(" ") };
    examples::send(&Hello { message: message.clone() }, EnqueueOptions::new().queue(queue), &format!("'{message}'"))
        .await
}
