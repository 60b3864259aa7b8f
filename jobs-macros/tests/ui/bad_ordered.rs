use jobs_core::prelude::*;

#[derive(Serialize, Deserialize, Job)]
#[job(ordered_by = "acount_id")]
struct MisspeltKey {
    account_id: u64,
}

#[derive(Serialize, Deserialize, Job)]
#[job(ordered_by = "account_id", rate = "10/s")]
struct WithARate {
    account_id: u64,
}

#[derive(Serialize, Deserialize, Job)]
#[job(ordered_by = "account_id", shards = 0)]
struct NoShards {
    account_id: u64,
}

#[derive(Serialize, Deserialize, Job)]
#[job(shards = 16)]
struct ShardsAlone {
    account_id: u64,
}

fn main() {}
