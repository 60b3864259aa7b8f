use jobs_core::{Job, JobContext, JobError, Perform};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Job)]
#[job(queue = "emails", name = "SendEmail")]
struct EmailJob {
    to: String,
}

impl Perform for EmailJob {
    async fn perform(self, _ctx: JobContext) -> Result<(), JobError> {
        Ok(())
    }
}

#[derive(Serialize, Deserialize, Job)]
enum Defaults {
    A,
    B(u32),
}

impl Perform for Defaults {
    async fn perform(self, _ctx: JobContext) -> Result<(), JobError> {
        Ok(())
    }
}

fn main() {
    assert_eq!((EmailJob::NAME, EmailJob::QUEUE), ("SendEmail", "emails"));
    assert_eq!((Defaults::NAME, Defaults::QUEUE), ("Defaults", "default"));
    let names: Vec<_> = jobs_core::registrations().map(|r| r.name()).collect();
    assert!(names.contains(&"SendEmail") && names.contains(&"Defaults"), "{names:?}");
}
