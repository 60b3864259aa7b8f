use jobs_core::{Job, JobContext, JobError, Perform};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Job)]
#[job(queue = "charges", rate = "5/s", rate_key = "customer")]
struct Charge {
    customer_id: u64,
    cents: u64,
}

impl Perform for Charge {
    async fn perform(self, _ctx: JobContext) -> Result<(), JobError> {
        Ok(())
    }
}

fn main() {}
