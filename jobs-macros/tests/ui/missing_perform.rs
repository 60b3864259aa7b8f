use jobs_core::Job;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Job)]
struct NoWork {
    n: u32,
}

fn main() {}
