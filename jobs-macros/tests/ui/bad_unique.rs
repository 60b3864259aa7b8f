use jobs_core::prelude::*;

#[derive(Serialize, Deserialize, Job)]
#[job(unique_for = "2d")]
struct TooLong {
    user_id: u64,
}

#[derive(Serialize, Deserialize, Job)]
#[job(unique_for = "10m", unique_key = "account")]
struct NoSuchField {
    user_id: u64,
}

#[derive(Serialize, Deserialize, Job)]
#[job(unique_key = "user_id")]
struct KeyWithoutWindow {
    user_id: u64,
}

#[derive(Serialize, Deserialize, Job)]
#[job(unique_for = "10m", unique_until = "success")]
struct BadUntil {
    user_id: u64,
}

fn main() {}
