use jobs_core::{Job, JobContext, JobError, Perform};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Job)]
#[job(exchange = "logs", exchange_type = "headers")]
struct Log {
    line: String,
}

impl Perform for Log {
    async fn perform(self, _ctx: JobContext) -> Result<(), JobError> {
        Ok(())
    }
}

fn main() {}
