use jobs_core::prelude::*;

#[derive(Serialize, Deserialize, Job)]
#[job(priority = 10)]
struct TooHigh {
    user_id: u64,
}

#[derive(Serialize, Deserialize, Job)]
#[job(priorities, exchange = "logs")]
struct ThroughAnExchange {
    line: String,
}

fn main() {}
