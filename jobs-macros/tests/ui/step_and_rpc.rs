use jobs_core::prelude::*;

#[derive(Serialize, Deserialize, Job)]
#[job(step, rpc)]
struct Both;

fn main() {}
