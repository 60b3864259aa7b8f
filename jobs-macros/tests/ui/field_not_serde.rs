use jobs_core::{Job, JobContext, JobError, Perform};
use serde::{Deserialize, Serialize};

struct Handle;

#[derive(Serialize, Deserialize, Job)]
struct Upload {
    file: Handle,
}

impl Perform for Upload {
    async fn perform(self, _ctx: JobContext) -> Result<(), JobError> {
        Ok(())
    }
}

fn main() {}
