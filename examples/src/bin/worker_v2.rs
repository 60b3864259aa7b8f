//! Version 2 of the rolling-deploy example's worker: knows
//! [`examples::rollout::Resize`] and the new [`examples::rollout::Thumbnail`].

use examples::rollout::{Resize, Thumbnail};

fn main() -> std::process::ExitCode {
    jobs_worker::main_with(jobs_worker::jobs![Resize, Thumbnail])
}
