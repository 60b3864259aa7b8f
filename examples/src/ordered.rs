//! One job at a time per key, in order (`docs/job-control.md`): the entries
//! of one account's ledger apply one after another, in the order they were
//! enqueued, on whichever worker holds the account's shard; entries of
//! different accounts apply at once. The examples' `worker` runs them from
//! the queue `ledger` and its shards `ledger.shard.0` … `ledger.shard.3`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jobs_core::{Job, JobContext, JobError, Perform};
use serde::{Deserialize, Serialize};

/// An entry of an account's ledger.
#[derive(Debug, Clone, Serialize, Deserialize, Job)]
#[job(queue = "ledger", ordered_by = "account", shards = 4)]
pub struct ApplyEntry {
    /// The account: its value is the key.
    pub account: u64,
    /// The entry's number in the account's ledger.
    pub seq: u64,
    /// How long applying it takes, milliseconds.
    pub millis: u64,
}

/// Milliseconds since the Unix epoch, as the lines print it.
fn now_ms() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0)
}

impl Perform for ApplyEntry {
    async fn perform(self, ctx: JobContext) -> Result<(), JobError> {
        let (account, seq) = (self.account, self.seq);
        let at = now_ms();
        println!(
            "{} [{}] applying entry {seq} of account {account} (job {}) at {at}",
            crate::clock(),
            ctx.worker(),
            ctx.job_id()
        );
        tokio::time::sleep(Duration::from_millis(self.millis)).await;
        println!("{} [{}] applied entry {seq} of account {account} at {}", crate::clock(), ctx.worker(), now_ms());
        Ok(())
    }
}
