//! Flow control (`docs/flow-control.md`): a job type limited to two running
//! at once across every worker of the vhost, that stops cleanly when
//! cancelled. `charge 6` enqueues six; `worker --queues charges -n 4` on
//! two hosts runs at most two at a time between them.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jobs_core::{Job, JobContext, JobError, Perform};
use serde::{Deserialize, Serialize};

/// Charges a customer's card: an outside API that allows two calls at once.
#[derive(Debug, Clone, Serialize, Deserialize, Job)]
#[job(queue = "charges", max_running = 2)]
pub struct ChargeCard {
    /// The customer.
    pub customer: u64,
    /// How long the call takes, milliseconds.
    pub millis: u64,
}

/// Milliseconds since the Unix epoch, as the lines print it.
fn now_ms() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0)
}

impl Perform for ChargeCard {
    async fn perform(self, ctx: JobContext) -> Result<(), JobError> {
        println!(
            "{} [{}] charging customer {} (job {}) at {}",
            crate::clock(),
            ctx.worker(),
            self.customer,
            ctx.job_id(),
            now_ms()
        );
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(self.millis)) => {}
            _ = ctx.cancelled() => {
                println!("{} [{}] charge of customer {} cancelled at {}", crate::clock(), ctx.worker(), self.customer, now_ms());
                return Ok(());
            }
        }
        println!(
            "{} [{}] charged customer {} (job {}) at {}",
            crate::clock(),
            ctx.worker(),
            self.customer,
            ctx.job_id(),
            now_ms()
        );
        Ok(())
    }
}

/// Sends a text message through a provider that allows 100 a second for the
/// whole account: at most 100 start per second across every worker.
#[derive(Debug, Clone, Serialize, Deserialize, Job)]
#[job(queue = "sms", rate = "100/s")]
pub struct SendSms {
    /// The number.
    pub to: String,
}

/// Where `rate_check` records starts (unset in a worker: nothing kept).
pub static SMS_STARTS: std::sync::OnceLock<std::sync::Mutex<Vec<std::time::Instant>>> = std::sync::OnceLock::new();

impl Perform for SendSms {
    async fn perform(self, ctx: JobContext) -> Result<(), JobError> {
        match SMS_STARTS.get() {
            Some(starts) => starts.lock().unwrap_or_else(|e| e.into_inner()).push(std::time::Instant::now()),
            None => println!(
                "{} [{}] text to {} (job {}) at {}",
                crate::clock(),
                ctx.worker(),
                self.to,
                ctx.job_id(),
                now_ms()
            ),
        }
        Ok(())
    }
}

/// Rebuilds a search index: one at a time per index. Enqueued while one is
/// queued or running (for 30 minutes at most), it is a duplicate: the
/// enqueue returns `Err(Error::Duplicate { existing })` and nothing is sent.
#[derive(Debug, Clone, Serialize, Deserialize, Job)]
#[job(queue = "reindex", unique_for = "30m", unique_key = "index")]
pub struct RebuildIndex {
    /// The index: its value is the unique key.
    pub index: String,
    /// How long the rebuild takes, milliseconds.
    pub millis: u64,
}

impl Perform for RebuildIndex {
    async fn perform(self, ctx: JobContext) -> Result<(), JobError> {
        let (worker, id) = (ctx.worker().to_owned(), ctx.job_id().to_string());
        println!("{} [{worker}] reindexing {} (job {id}) at {}", crate::clock(), self.index, now_ms());
        tokio::time::sleep(Duration::from_millis(self.millis)).await;
        println!("{} [{worker}] reindexed {} (job {id}) at {}", crate::clock(), self.index, now_ms());
        Ok(())
    }
}

/// Syncs an account with a partner API that allows each account 5 calls a
/// second: each account has its own rate, and a call the partner refuses
/// anyway (its own limit) comes back later as the same attempt.
#[derive(Debug, Clone, Serialize, Deserialize, Job)]
#[job(queue = "account-syncs", rate = "5/s", rate_key = "account")]
pub struct SyncAccount {
    /// The account: its value is the rate's key.
    pub account: u64,
}

impl Perform for SyncAccount {
    async fn perform(self, ctx: JobContext) -> Result<(), JobError> {
        println!("{} [{}] syncing account {} (job {})", crate::clock(), ctx.worker(), self.account, ctx.job_id());
        // What a partner's "429 Too Many Requests, retry after 2 s" becomes:
        // Err(JobError::rate_limited(Duration::from_secs(2)))
        Ok(())
    }
}
