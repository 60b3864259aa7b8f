use jobs_core::prelude::*;

/// A job in another module.
#[derive(Serialize, Deserialize, Job)]
#[job(queue = "lto-app")]
pub struct LtoReport {
    pub n: u32,
}

impl Perform for LtoReport {
    async fn perform(self, ctx: JobContext) -> Result<(), JobError> {
        println!("ran LtoReport {} on {}", self.n, ctx.worker());
        Ok(())
    }
}
