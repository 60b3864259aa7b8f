use jobs_core::prelude::*;

#[derive(Serialize, Deserialize, Job)]
#[job(step)]
struct Resize {
    path: String,
}

impl Step for Resize {
    type Input = ();
    type Output = String;
    async fn run(self, (): (), _ctx: JobContext) -> Result<String, JobError> {
        Ok(self.path)
    }
}

#[derive(Serialize, Deserialize, Job)]
#[job(step)]
struct Count;

impl Step for Count {
    type Input = u64;
    type Output = ();
    async fn run(self, _n: u64, _ctx: JobContext) -> Result<(), JobError> {
        Ok(())
    }
}

#[derive(Serialize, Deserialize, Job)]
#[job(rpc)]
struct Ask;

impl Respond for Ask {
    type Output = u8;
    async fn respond(self, _ctx: JobContext) -> Result<u8, JobError> {
        Ok(1)
    }
}

fn main() {
    // A String is not a u64.
    let _ = chain![Resize { path: "cat.jpg".into() }, Count];
    // A call is no step.
    let _ = Chain::new(Ask);
}
