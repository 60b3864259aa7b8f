use jobs_core::prelude::*;

#[derive(Serialize, Deserialize, Job)]
#[job(step)]
struct Resize {
    path: String,
}

impl Perform for Resize {
    async fn perform(self, _ctx: JobContext) -> Result<(), JobError> {
        Ok(())
    }
}

fn main() {}
