//! Tutorial 1's `receive`: prints each job from queue `hello` (`--queue` to use another).

fn main() -> std::process::ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let queue = examples::take_flag(&mut args, "--queue").unwrap_or_else(|| "hello".into());
    examples::receive(vec![queue], Vec::new())
}
