use jobs_core::{Job, JobContext, JobError, Perform};
use serde::{Deserialize, Serialize};

fn backoff_in_seconds(attempt: u32) -> u64 {
    u64::from(attempt)
}

#[derive(Serialize, Deserialize, Job)]
#[job(backoff = backoff_in_seconds)]
struct Wrong {
    n: u32,
}

impl Perform for Wrong {
    async fn perform(self, _ctx: JobContext) -> Result<(), JobError> {
        Ok(())
    }
}

fn main() {}
