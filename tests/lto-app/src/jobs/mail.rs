use jobs_core::prelude::*;

/// A job in one module.
#[derive(Serialize, Deserialize, Job)]
#[job(queue = "lto-app")]
pub struct LtoMail {
    pub n: u32,
}

impl Perform for LtoMail {
    async fn perform(self, ctx: JobContext) -> Result<(), JobError> {
        println!("ran LtoMail {} on {}", self.n, ctx.worker());
        Ok(())
    }
}
