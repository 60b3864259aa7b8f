use jobs_core::{Job, JobContext, JobError, Perform};

#[derive(Job)]
struct Plain {
    n: u32,
}

impl Perform for Plain {
    async fn perform(self, _ctx: JobContext) -> Result<(), JobError> {
        Ok(())
    }
}

fn main() {}
